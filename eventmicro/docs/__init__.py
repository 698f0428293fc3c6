"""The documents layer: AsyncAPI 3.0 documents of services, from their code or from discovery."""

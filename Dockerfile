# The eventmicro image for the reference shop (compose.yaml): the library, the generated
# schemas and the services in subscribers/. `docker build -t eventmicro .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY eventmicro ./eventmicro
COPY schemas ./schemas
COPY subscribers ./subscribers
RUN pip install --no-cache-dir '.[uvloop]'
ENV PYTHONUNBUFFERED=1
# the wheel installs only eventmicro: the shop's services are imported from /app (the working
# directory); the service to run is the compose service's command, e.g. eventmicro run subscribers.orders
CMD ["eventmicro", "--help"]

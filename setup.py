"""Build step that pyproject.toml cannot declare: the demo's copy of the reference shop.

The wheel ships one top-level package, ``eventmicro``. ``eventmicro demo`` runs the reference
shop, whose source stays in this repository's ``schemas/`` and ``subscribers/``; a wheel (and a
build from the sdist) carries a copy of both under ``eventmicro/_demo_shop/``, which the demo
puts first on the path of its own processes (`eventmicro.cli.demo.shop_root`). They are not
installed as top-level ``schemas`` and ``subscribers`` packages, which would shadow, or be
shadowed by, a user's own. An editable install (``pip install -e .``) copies nothing: the demo
finds the shop next to the ``eventmicro`` directory of the checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHOP = ("schemas", "subscribers")  # the directories copied, each whole but for caches
DEMO_SHOP = Path("eventmicro", "_demo_shop")  # where they go in the wheel


class BuildWithDemoShop(build_py):
    """``build_py``, then the shop copied under ``eventmicro/_demo_shop/`` in the build tree."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the demo uses the checkout's own schemas/ and subscribers/
        target = Path(self.build_lib) / DEMO_SHOP
        shutil.rmtree(target, ignore_errors=True)
        for name in SHOP:
            source = ROOT / name
            if not (source / "__init__.py").is_file():
                raise RuntimeError(f"the demo's shop is missing: {source} (build from a checkout or sdist)")
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))


setup(cmdclass={"build_py": BuildWithDemoShop})

"""pcavs-jax: PC-AVS (pose-controllable audio-visual talking faces) in JAX/Flax."""
import pathlib

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent


def _requirements(name: str) -> list[str]:
  lines = (_HERE / name).read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith(("#", "-r"))]


setup(
    name="pcavs-jax",
    version="0.1.0",
    description="PC-AVS talking-face generation in JAX/Flax: networks, training, data, inference.",
    packages=find_packages(include=["pcavs_jax*", "data_pipeline*", "configs*"]),
    python_requires=">=3.10",
    install_requires=_requirements("requirements.txt"),
    extras_require={"dev": _requirements("requirements-dev.txt")},
    entry_points={"console_scripts": ["pcavs-jax=pcavs_jax.cli.main:main"]},
)

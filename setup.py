"""Installs the project packages and the `mlops` console command into the TFX environment (.venv).

TFX itself is pinned by the Makefile against constraints/tfx-py310.txt (a pip freeze that
installed and ran here); Airflow lives in its own environment (.venv-airflow) and is not a
dependency of this package.
"""

from setuptools import find_packages, setup

setup(
    name="nightly-tfx",
    version="0.1.0",
    description="Nightly TFX retraining on Airflow with drift gates, serving, rollback, lineage and alerts",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipelines*", "components*", "serving*", "monitoring*"]),
    install_requires=["tfx==1.16.0", "dill", "orjson", "tomli", "prometheus-client", "grafanalib",
                      "openlineage-python", "pymysql",  # mlops metadata migrate/init on MySQL/MariaDB
                      "kfp-pipeline-spec==0.2.2"],  # mlops compile (Kubeflow V2): newer needs protobuf 6
    extras_require={"test": ["pytest>=8", "pytest-timeout"]},
    entry_points={"console_scripts": ["mlops=pipelines.cli:main"]},
)

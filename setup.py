"""Installs microexp, its console script and its pinned dependencies.

torch/torchvision are pinned together (torchvision's C++ ops must match torch's ABI); pytorchvideo
0.1.5 is the only release and only its ``models``/``layers``/``data`` modules are used.
Only one OpenCV wheel may be installed: the contrib build carries TV-L1 optical flow and (4.x) the
Haar face cascades that the predictor uses, so it is the one we require.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "pytorchvideo==0.1.5",
    "decord==0.6.0",
    "av>=12,<20",
    "numpy>=1.24,<3",
    "pandas>=2.0,<4",
    "openpyxl>=3.1,<4",
    "scikit-learn>=1.3,<2",
    "optuna>=4.0,<6",
    "opencv-contrib-python-headless>=4.8,<5",
    "PyYAML>=6.0,<7",
    "tqdm>=4.60,<5",
    "matplotlib>=3.7,<4",
    "pillow>=10",
]

setup(
    name="microexp",
    version="0.1.0",
    description="Micro-expression video recognition toolkit: DFME-style data, models, protocols and studies",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["microexp", "microexp.*"]),
    package_data={"microexp.data": ["*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=7", "onnx>=1.16,<2", "onnxruntime>=1.18,<2", "onnxscript>=0.1,<1",
                 "psycopg2-binary>=2.9"],  # psycopg2: the PostgreSQL sweep test
        "export": ["onnx>=1.16,<2", "onnxruntime>=1.18,<2", "onnxscript>=0.1,<1"],
    },
    entry_points={"console_scripts": ["microexp=microexp.cli:main"]},
)

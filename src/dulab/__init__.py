"""dulab: deep unsupervised learning in one PyTorch library.

Train, sample from, evaluate and compare likelihood models, implicit models and representation learners,
from Python or the ``dulab`` command::

    import dulab
    ds = dulab.load_dataset("digits")
    run = dulab.train("histogram", data="digits", epochs=5)
    model = dulab.load(run.dir)
"""

__version__ = "0.1.0"

from dulab import datasets  # noqa: E402
from dulab.api import build_model, list_models  # noqa: E402
from dulab.data import list_datasets, load_dataset  # noqa: E402
from dulab.data.base import DataSpec  # noqa: E402
from dulab.errors import UserError  # noqa: E402
from dulab.training.run import Run, load, resume, train  # noqa: E402

__all__ = ["__version__", "list_models", "list_datasets", "load_dataset", "build_model", "train", "load", "resume",
           "Run", "DataSpec", "UserError", "datasets"]

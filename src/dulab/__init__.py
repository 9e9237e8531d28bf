"""dulab: deep unsupervised learning in one PyTorch library.

Train, sample from, evaluate and compare likelihood models, implicit models and representation learners,
from Python or the ``dulab`` command::

    import dulab
    ds = dulab.load_dataset("digits")
    run = dulab.train("histogram", data="digits", epochs=5)
    model = dulab.load(run.dir)
    dulab.evaluate(run.dir)
"""

from dulab import compression, datasets, metrics
from dulab._version import __version__
from dulab.api import build_model, list_models
from dulab.data import list_datasets, load_dataset
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.evaluation import evaluate
from dulab.scores import score
from dulab.training.run import Run, load, resume, train

__all__ = ["__version__", "list_models", "list_datasets", "load_dataset", "build_model", "train", "load", "resume",
           "evaluate", "score", "Run", "DataSpec", "UserError", "datasets", "metrics", "compression"]

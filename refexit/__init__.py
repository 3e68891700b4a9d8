"""refexit: a readable NumPy oracle for early-exit BERT, and the truth the compiled C is checked against."""
from .config import BertConfig
from .errors import CheckpointError, ConfigError, InputError, RefexitError
from .heads import ExitParams, Head
from .model import PRECISIONS, Model, load
from .policies import (CeeBERT, DistanceEntropy, Entropy, ExitWarning, Learned, MaxProb, NormEntropy, Patience, Policy, Ponder,
                       PredictedExit, Static, Window, make_policy)
from .policies import GlobalPastFuture
from .results import ClassifyResult
from .cascade import Cascade, CascadeResult, Stage
from .policies import DACT
from .policies import SkipEntropy
from .tokens import TokenReduction

__version__ = "0.1.0"

__all__ = ["BertConfig", "CheckpointError", "ConfigError", "InputError", "RefexitError", "ExitParams",
           "Head", "Model", "PRECISIONS", "load", "CeeBERT", "DistanceEntropy", "Entropy", "ExitWarning", "Learned", "MaxProb",
           "NormEntropy", "Patience", "Policy", "Ponder", "PredictedExit", "Static", "Window", "make_policy",
           "ClassifyResult", "Cascade", "CascadeResult", "Stage", "GlobalPastFuture", "TokenReduction",
           "DACT", "__version__"]
__all__ += ["SkipEntropy"]

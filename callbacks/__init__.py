"""Lightning callbacks that run TAI checks during validation; usable in any Trainer."""

from callbacks.adversarial import AdversarialCallback
from callbacks.calibration import CalibrationCallback
from callbacks.prototypes import PrototypeExplanationCallback
from callbacks.robustness import RobustnessCallback

__all__ = [
    "AdversarialCallback",
    "CalibrationCallback",
    "PrototypeExplanationCallback",
    "RobustnessCallback",
]

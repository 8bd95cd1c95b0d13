"""The exceptions edgefit raises for bad input. Only the CLI turns them into exit code 2."""


class EdgefitError(Exception):
    """A problem with the user's input that deserves a one-line message, not a traceback."""


class ModelError(EdgefitError):
    """The model file is missing, unreadable, not ONNX, or not a valid graph."""


class ShapeError(EdgefitError):
    """Input shapes are malformed or cannot be resolved."""


class ProfileError(EdgefitError):
    """A device profile is unknown, malformed or incomplete."""


class PassError(EdgefitError):
    """An optimisation pass cannot be applied safely."""


class ConfigError(EdgefitError):
    """A configuration file or command-line option is malformed."""


class MeasurementError(EdgefitError):
    """A measurement file is malformed, or timings on this host are too unstable to calibrate on."""

"""The root of gopwatch's error tree and the errors of the wire contracts.

Every error that gopwatch raises on purpose derives from :class:`GopwatchError`; each package adds
its own branch in its own ``errors.py`` and foreign errors (aiokafka, PyAV, FAISS, ONNX Runtime)
are translated into this tree at the one seam where they occur::

    GopwatchError                      root: catch this to catch everything gopwatch raises
    ├── ContractError                  schemas/: a message breaks a wire contract
    │   └── InvalidMessageError        a record, header set or JSON body cannot be parsed
    ├── ConfigError                    schemas/: settings that cannot work
    ├── MediaError                     streaming/: bytes that cannot be demuxed or decoded
    │   ├── CorruptSegmentError
    │   ├── UnsupportedCodecError
    │   ├── OversizedInputError
    │   └── DecodeBudgetExceededError
    ├── ScenarioError                  streaming/: a synthetic scenario that cannot be rendered
    ├── ModelError                     models/: weights, checkpoints, inference
    └── BrokerError                    consumers/: a broker that cannot be started or reached

``str(error)`` is always one line that says what is wrong and, where it can, what to do about it.
"""

from __future__ import annotations


class GopwatchError(Exception):
    """Root of every error gopwatch raises on purpose."""


class ContractError(GopwatchError):
    """A message does not follow a wire contract."""


class InvalidMessageError(ContractError):
    """A record, a header set or a JSON body cannot be parsed into its contract."""


class ConfigError(GopwatchError):
    """Settings that cannot work (missing values, contradictions, unreadable files)."""

"""The root of gopwatch's error tree and the errors of the wire contracts.

Every error that gopwatch raises on purpose derives from :class:`GopwatchError`; each package adds
its own branch in its own ``errors.py`` and foreign errors (aiokafka, PyAV, FAISS, ONNX Runtime)
are translated into this tree at the one seam where they occur::

    GopwatchError                      root: catch this to catch everything gopwatch raises
    ├── UsageError                     a command asked for what cannot be done as given (missing
    │                                  file, empty selection, bad argument): exit code 2
    ├── ContractError                  schemas/: a message breaks a wire contract
    │   └── InvalidMessageError        a record, header set or JSON body cannot be parsed
    ├── ConfigError                    schemas/: settings that cannot work
    ├── MediaError                     streaming/: bytes that cannot be demuxed or decoded
    │   ├── CorruptSegmentError        garbage, truncated, empty, unrecognised container
    │   ├── UnsupportedCodecError      a codec gopwatch does not analyse
    │   ├── OversizedInputError        a payload or frame over the configured limits
    │   └── DecodeBudgetExceededError  one segment took longer than its decode budget
    ├── SnapshotError                  streaming/: a stream-state snapshot that cannot be used
    ├── ScenarioError                  streaming/: a synthetic scenario that cannot be rendered
    ├── ModelError                     models/: weights, checkpoints, inference
    │   ├── CheckpointMismatchError    a checkpoint whose sha256 or config is not its card's
    │   ├── KbError                    a knowledge base that cannot be read, an example refused
    │   └── JpegError                  a still that is not a complete, supported JPEG
    ├── BrokerError                    consumers/: a broker that cannot be started, reached or used
    │   ├── BrokerUnreachableError     no broker answered at the bootstrap address
    │   ├── BrokerAuthError            a broker answered and refused the credentials
    │   ├── BrokerTlsError             a broker answered and the TLS handshake or certificate failed
    │   ├── FencedError                another worker took over a partition this one wrote to
    │   └── JarCacheError              the Apache Kafka jars are missing and cannot be fetched
    ├── EngineError                    consumers/: the engines that process records
    │   └── WorkerProcessError         an engine process died or never became ready
    │       └── EngineCrashError       it died on one record, which is set aside (a dead letter)
    ├── PublishError                   consumers/: a source that cannot be cut into segments
    └── ReplayError                    consumers/: a replay file or run that cannot be used

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


class UsageError(GopwatchError):
    """A command asked for something that cannot be done as given (a missing file, an empty
    selection, an argument out of range)."""

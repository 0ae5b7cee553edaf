"""Third-party log lines that are no news to a docread user, kept off stderr (the CLI at start, and every
model load)."""

from __future__ import annotations

# Third-party lines that are no news to a docread user: bitsandbytes, on a CPU with AVX512-BF16, fetches an
# optional kernel from the hub at import and logs a warning when it cannot (offline, or no `kernels`);
# docread's CPU path does not need it.
_NOISE = {"bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",)}


def _not_noise(record) -> bool:
    return not str(record.msg).startswith(_NOISE.get(record.name, ()))


def quiet_third_parties() -> None:
    """Keep the known third-party notices off stderr (idempotent; before or after those libraries load)."""
    import logging

    for name in _NOISE:
        logger = logging.getLogger(name)
        if _not_noise not in logger.filters:
            logger.addFilter(_not_noise)

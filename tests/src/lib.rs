//! cassio-tests: integration tests live in `tests/tests/`; helper binaries
//! they spawn live in `src/bin/`.

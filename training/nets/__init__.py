"""Networks. Every module here depends on torch only, so it can ship inside a `.mar`."""

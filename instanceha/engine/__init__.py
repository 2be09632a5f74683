"""The pure decision engine of instanceha.

Nothing in this package does I/O, reads a clock, reads oslo.config or imports
a third-party client: it receives observations and a frozen policy, and returns
decisions. The import-linter contracts in ``.importlinter`` keep it that way.
"""

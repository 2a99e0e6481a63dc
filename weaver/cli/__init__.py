"""Command-line entry points (`weaver-train`, ...) and what they share: the config tree and its resolvers."""

"""localaws service extensions: one module per AWS service, each with install(runtime)."""

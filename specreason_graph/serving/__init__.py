"""Server operations: configs for the vLLM servers, the launcher that runs them here, and the
preflight that checks any pair of endpoints before a run. The graph never imports this package."""

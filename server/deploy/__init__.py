"""Running gguf-serve beyond one process: rpc-servers for split models, Ray Serve replicas."""

"""The process in each pod: fetch, build or fetch the engine, warm up, serve."""

"""Developer tools: the offline plan and the mock runner it shares with tests and policies."""

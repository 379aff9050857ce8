"""Test helpers that ship with the package: `fake_openai.FakeOpenAI`, a scripted OpenAI-compatible server;
`damage`, damaged files (a PNG that claims to be huge, a shard cut short)."""

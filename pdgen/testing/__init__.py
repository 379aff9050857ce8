"""Test helpers that ship with the package: `fake_openai.FakeOpenAI`, a scripted OpenAI-compatible server;
`images.decompression_bomb_png`, a tiny PNG that claims to be huge."""

"""Test helpers that ship with the package: `fake_openai.FakeOpenAI`, a scripted OpenAI-compatible server."""

"""Using a model: load a base, a run or several adapter runs on one base (loading), decode (generation), and the
`generate` / `chat` commands' work (batch, chat)."""

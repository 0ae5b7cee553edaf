"""`docread mcp`: docread's reads as MCP tools (the official `mcp` SDK, the `mcp` extra): ask_document, ocr,
extract, locate, inspect, their inputs derived from `docread.settings`. `inputs` (documents, read options),
`tools` (the work, the outputs), `server` (the tools registered; stdio or streamable HTTP)."""

"""The data plane: an asyncio (uvloop) HTTP/1.1 proxy around the decision core."""

"""The LangGraph graphs (the arena session, chat, fan-out) and how runs of them are stored, resumed and served."""

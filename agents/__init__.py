"""The agents: patient and therapist, symptom encoder and decoder, the chat models they run on, and risk screening."""

"""The domain: plain types and pure rules (callbacks, events, filters, subscribers, retries, the delivery
decision). Every layer may import it; it imports nothing else of relay. Its errors (`domain.errors`) say what
went wrong; each edge maps them to its own answer."""

"""The domain: plain types and pure rules (callbacks, events, filters, subscribers, retries, the delivery
decision). Every layer may import it; it imports nothing of relay but `relay.errors`."""

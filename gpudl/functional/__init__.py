"""Neural-net ops (conv, pool, activations, losses, norm, dropout, rnn, attention, graph)."""

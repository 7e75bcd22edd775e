"""Training on a rolling window of spans: Transform and Trainer executors that know which span is which."""

"""Tools beside the service: bench, eval, eval-summaries, demo, soak, and the helpers the soak
and the tests share (testing.py). The daemon's runtime imports none of them."""

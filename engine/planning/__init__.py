"""What one run will do, decided before anything runs: the `Plan` of a definition, its
parameters, its selection and the catalog's read side; resumes and replays are plans too, and
`schemas` works out every output's schema over empty inputs.

`arrowline plan` prints the plan that `arrowline run` executes, so the two cannot disagree.
"""

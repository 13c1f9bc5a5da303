"""One reference answer per exercise, a module per exercise named like its grader (`labkit.exercises.top_p` ->
`labkit.exercises.solutions.top_p`). The labs' tests inject them through the SOLUTIONS parameter; a learner may read
them after trying."""

// The list of verbs. Each import registers one command.

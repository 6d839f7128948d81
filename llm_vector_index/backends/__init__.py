"Built-in backends, each registered through our own hook like a third-party one."

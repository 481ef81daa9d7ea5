"""Resources to run a local Apache Kafka: the pom that fetches its jars, the log config."""

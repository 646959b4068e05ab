"""The local stack (Kafka KRaft from Maven Central, a private PostgreSQL), the topic spec
and deployment files."""

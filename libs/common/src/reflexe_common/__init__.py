"""What every Réflexe service needs: contracts, Kafka envelope, outbox, inbox, settings, auth."""

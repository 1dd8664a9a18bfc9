"""Pure rules of notification: who is told what, how a webhook is signed, when it is retried."""

-- A replica init/up meets for the first time: it belongs to the source's
-- history as it is now ($3), so what the stream still holds of an older
-- history (before pgferry was re-installed, or the source re-created) is
-- not applied to it. An existing row is left alone.
INSERT INTO pgferry.progress (replica, source, history) VALUES ($1, $2, $3)
ON CONFLICT (replica) DO NOTHING

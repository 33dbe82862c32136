INSERT INTO pgferry.progress (replica, source) VALUES ($1, $2)
ON CONFLICT (replica) DO NOTHING

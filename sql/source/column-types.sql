SELECT format_type($1::oid, $2::int) AS type_name

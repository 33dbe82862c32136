-- One row shape of trigger capture (pgferry.shapes), as JSON: for each field
-- of a row's text, the column's name then ("cols") and its name now
-- ("names": null where the column was dropped since, or the table is gone).
SELECT pg_catalog.json_build_object(
         'cols', s.cols,
         'names', ARRAY(SELECT a.attname::text
                          FROM unnest(s.nums) WITH ORDINALITY AS u(num, i)
                          LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = s.relid AND a.attnum = u.num AND NOT a.attisdropped
                         ORDER BY u.i))::text AS shape
FROM pgferry.shapes s
WHERE s.shape_id = $1

-- Nothing to restore that the rows need: the status check came back only with a rebuild,
-- and a database with newer statuses could not take it anyway.
SELECT 1;

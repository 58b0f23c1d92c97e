DROP TABLE invoice_actions;

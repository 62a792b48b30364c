-- Renewals (README "Programs and rewards"). Never edit an applied migration: add a new file.

-- Salesforce Opportunity.Type, so a renewal can be told from new business by configuration
-- (`[renewals]`); HubSpot renewals are told by their pipeline.
ALTER TABLE crm_records ADD COLUMN deal_type TEXT;

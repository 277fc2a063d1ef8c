-- What the admin keeps about a person besides the name: an e-mail address, a member number
-- (unique within the site when set; NULL when not), a free note, and the last day the person
-- may enter, as a local date `YYYY-MM-DD` in the site's zone (NULL: no end). After the end of
-- that day (local midnight) the compiled lists hold none of the person's cards or codes.
ALTER TABLE people ADD COLUMN email TEXT;
ALTER TABLE people ADD COLUMN member_number TEXT;
ALTER TABLE people ADD COLUMN note TEXT;
ALTER TABLE people ADD COLUMN expires_on TEXT;
CREATE UNIQUE INDEX people_member_number ON people (site_id, member_number);

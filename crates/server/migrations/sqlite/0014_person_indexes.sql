-- Compiling a door's list joins its rules' people to their cards, keypad codes and groups, and
-- a schedule to its slots. Without these indexes each join scanned the whole table once per
-- door: a 1,000-door site of 100,000 cards read every card a thousand times.
CREATE INDEX cards_person ON cards (person_id);
CREATE INDEX keypad_users_person ON keypad_users (person_id);
CREATE INDEX group_members_person ON group_members (person_id);
CREATE INDEX schedule_slots_schedule ON schedule_slots (schedule_id);
CREATE INDEX rules_group ON rules (group_id);
CREATE INDEX rules_person ON rules (person_id);

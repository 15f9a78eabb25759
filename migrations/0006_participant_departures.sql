CREATE TABLE `participant_departures` (
	`room_id` text NOT NULL,
	`account_id` text NOT NULL,
	`org_id` text NOT NULL,
	`joined_at` text NOT NULL,
	`left_at` text NOT NULL,
	PRIMARY KEY(`room_id`, `account_id`, `joined_at`)
);
--> statement-breakpoint
CREATE INDEX `participant_departures_left_idx` ON `participant_departures` (`left_at`);
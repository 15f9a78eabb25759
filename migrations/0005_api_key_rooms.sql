CREATE TABLE `api_key_rooms` (
	`key_id` text NOT NULL,
	`room_id` text NOT NULL,
	PRIMARY KEY(`key_id`, `room_id`)
);

ALTER TABLE `attachments` ADD `conversation_id` text;--> statement-breakpoint
CREATE TABLE `attachment_refs` (
	`attachment_id` text NOT NULL,
	`conversation_id` text NOT NULL,
	`room_id` text NOT NULL,
	`org_id` text NOT NULL,
	`created_at` text NOT NULL,
	PRIMARY KEY(`attachment_id`, `conversation_id`)
);
